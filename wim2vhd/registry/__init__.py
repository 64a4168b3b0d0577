"""Windows registry hives: editing through hivex (hive), a new empty hive built from the regf
format's facts (regf), and regedit's .reg files (regedit)."""
