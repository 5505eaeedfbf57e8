"""Pure accounting: the Usage model, tool identification, pricing lookup and cost."""
