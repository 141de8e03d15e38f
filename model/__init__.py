"""The trained model as one artefact: bundle format, scoring, compiled forest, registry, state.

Shared by training (which writes bundles) and serving (which answers with them); it imports
only `features`.
"""
