"""Provider adapters, one module each, all the same shape (see :class:`base.Provider`)."""
