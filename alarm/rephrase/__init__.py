"""Self-generation and self-rephrasing of training targets (ALARM_SPEC section 7); see ``pipeline``."""
