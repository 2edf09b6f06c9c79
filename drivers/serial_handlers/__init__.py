"""pyserial URL protocol handlers for simulated instruments (``serial.serial_for_url("xyshutter://...")``)."""
