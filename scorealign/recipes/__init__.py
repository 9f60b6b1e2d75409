"""Commands built on the loop: SFT, reward models, sample/score, synth-prefs, demo, transfer, bandit."""
