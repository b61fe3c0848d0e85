"""nightseg: robust nighttime semantic segmentation through day<->night image conversion.

Reproduces and extends Sun, Wang, Yang, Xiang, "See Clearer at Night: Towards Robust Nighttime
Semantic Segmentation through Day-Night Image Conversion" (2019, arXiv 1908.05868).
"""

__version__ = "0.1.0"
