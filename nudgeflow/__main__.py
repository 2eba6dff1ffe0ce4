from nudgeflow.pipeline.cli import main

main()
