"""fMRIPrep for raw BIDS data: its command line, set-up checks, derivative checks and motion QC."""
