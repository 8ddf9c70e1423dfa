"""fmi_client: TCP hole punching between serverless functions and FMI-style collectives."""
