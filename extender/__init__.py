"""kube-scheduler HTTP extender that ranks nodes from APOLLO's predictions."""
