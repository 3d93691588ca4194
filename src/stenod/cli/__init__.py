"""The ``stenod`` command line: a thin layer over the service layer."""
