from cbirq.cli import main

main()
