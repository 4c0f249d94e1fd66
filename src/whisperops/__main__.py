from whisperops.cli import main

main()
