from nudgeflow.cli.main import main

main()
