"""Making a volume bootable, and Boot Configuration Data.

* elements: element and object numbers and names (pure tables);
* devices: device elements (partition, locate, VHD, ramdisk...), encoded as Windows writes them;
* values: every element's value to and from its registry value, and as bcdedit shows it;
* store: BcdStore and BcdObject on a hive (wim2vhd.registry.hive), and the objects bcdboot writes;
* view: a whole store as bcdedit /enum all shows it;
* edit: the whole-file operations of the `wim2vhd bcd` commands;
* bcdboot: the boot stage of apply (boot files from the image, the store from its BCD-Template);
* biosboot: BIOS boot code (GRUB's i386-pc images) in the MBR and the volume.
"""
