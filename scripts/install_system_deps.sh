#!/usr/bin/env bash
# Installs the Debian packages that napari needs under xvfb-run (Xvfb, Mesa GL, Qt's xcb
# libraries) and ffmpeg for video readers. Does nothing when they are already there.
set -euo pipefail

packages=(
    xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libdbus-1-3 libfontconfig1
    libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "These system packages are missing and apt-get is not available: ${missing[*]}" >&2
    echo "Install them with your system's package manager, then run make again." >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "Installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
