"""One job's runtime: its context (settings, device, tracker), the plan and cost lines it prints,
pre-flight checks, the checkpoint it analyses, W&B tracking."""
