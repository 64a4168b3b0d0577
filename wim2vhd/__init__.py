"""wim2vhd: Windows images (WIM, ESD, split WIM) into bootable VHD and VHDX disks, on Linux, unprivileged."""
__version__ = "0.1.0"
