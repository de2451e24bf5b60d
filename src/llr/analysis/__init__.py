"""Analyses of section 2: NC1, margins, the SVM convergence check, and the effective group ratio of Figure 8."""
