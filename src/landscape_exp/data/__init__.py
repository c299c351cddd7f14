"""Datasets as uint8 image splits (torchvision's classes, image folders, the researcher's own
factory) and their device-resident form."""
