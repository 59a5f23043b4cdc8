"""Research built on trl-gram: experiments, their configs, analysis scripts and reports. Not part of the package."""
