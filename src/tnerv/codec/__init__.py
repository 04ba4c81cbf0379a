"""Compression: quantisers, entropy models and coding, the .tnrv bitstream."""
