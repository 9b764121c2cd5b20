"""Layer 4, presentation: figures, what a page opens with, running notebooks, the book and README's tables."""
