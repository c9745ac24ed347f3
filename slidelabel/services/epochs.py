"""Job kind ``epoch``: train on a project's labels, predict every superpixel and rank them."""
