"""leadscore: predictive lead scoring beside your point grid."""
