"""BoxMed-RL, the reference model of the toolkit: knowledge banks, CoT builder, prompts,
rewards, the three training stages (MCL -> SVR -> adapter) and the ``boxmedrl`` plugin."""
