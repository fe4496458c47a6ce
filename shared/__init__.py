"""Code that several services use. It never imports a service."""
