"""Sensor drivers (D435 depth, Lepton thermal) and the frame types they produce."""
