"""Operators: the selective scan with one signature and several backends."""
