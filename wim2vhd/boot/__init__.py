"""Boot files and Boot Configuration Data.

BCD: :mod:`wim2vhd.boot.bcd` (stores, objects, what bcdboot writes),
:mod:`wim2vhd.boot.devices` (device elements), :mod:`wim2vhd.boot.elements`
(names and numbers), :mod:`wim2vhd.registry.hive` (hivex) and
:mod:`wim2vhd.registry.regf` (an empty hive to start a store from).
"""
