from wim2vhd.cli import main

main()
