"""Point-in-time features: the data contract, snapshots, and the one definition of every feature.

Nothing here imports `training`, `serving` or `leadscore`: they import us.
"""
