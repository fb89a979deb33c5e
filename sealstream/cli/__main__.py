from sealstream.cli import main

main()
