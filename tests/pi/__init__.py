"""The Raspberry Pi check under emulation (benchmarks/pi/): its detection comparison, its script's
lint, and (slow, root, qemu-user-static and debootstrap only) the check itself."""
