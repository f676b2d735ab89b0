from fastq.cli import main

main()
