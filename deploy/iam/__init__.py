"""IAM policy documents (JSON) for the deployer, the task and the DNS refresher.

A package only so that the JSON files ship in wheels alongside the code that reads them.
"""
