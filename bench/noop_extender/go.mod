module noop-extender

go 1.24
