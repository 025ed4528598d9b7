"""What people read: the run's report, model card and plots. Never imports a stage."""
