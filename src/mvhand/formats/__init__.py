"""On-disk contracts: challenge sequence tars, the crop cache, submissions and ground truth."""
