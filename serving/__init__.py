"""The scoring service: answers CRM requests with a trained model bundle (BentoML)."""
