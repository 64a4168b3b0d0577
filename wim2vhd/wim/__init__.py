"""Windows images: WIM, ESD and split WIMs through wimlib (wim2vhd.wim.wimlib), and install images
read from an ISO (wim2vhd.wim.iso) with the WIM header facts that reading needs (wim2vhd.wim.header)."""
from wim2vhd.wim.wimlib import COMPRESSIONS, ImageInfo, Wim, capture_ntfs, compression_name

__all__ = ["COMPRESSIONS", "ImageInfo", "Wim", "capture_ntfs", "compression_name"]
