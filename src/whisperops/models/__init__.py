"""Model weights: the registry of names, the CTranslate2 file format and conversions."""
