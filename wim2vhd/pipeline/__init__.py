"""The pipelines over the parts: apply (a WIM image into a bootable disk), customize (what apply
changes in the image and the volume), capture (a disk's Windows volume back into a WIM)."""
