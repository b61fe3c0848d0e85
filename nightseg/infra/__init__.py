"""Infrastructure every training and inference job runs on: the hardware's defaults, the processes
of a job, preemption signals, the stage cache (the only owner of its layout), experiment tracking,
the job context and the Trainer factory."""
