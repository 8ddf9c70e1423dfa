"""The rendezvous server on Fargate, with its Route 53 record kept true."""
