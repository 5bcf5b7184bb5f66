from agebench.cli import main

main()
