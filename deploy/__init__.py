"""rendezvous-deploy: put the server on Fargate, keep its DNS true, run the pipeline."""
