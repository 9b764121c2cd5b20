"""Spike Train Scalograms (STS) compendium utilities."""
import warnings

__version__ = "0.1.0"

# Optuna and captum import tqdm.auto, which in a Jupyter kernel without ipywidgets warns on stderr (a red box
# with the reader's venv path on every executed page); progress goes to the terminal here, never to widgets.
warnings.filterwarnings("ignore", message="IProgress not found")
