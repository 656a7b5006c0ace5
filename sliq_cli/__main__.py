from sliq_cli.cli.app import main

main()
