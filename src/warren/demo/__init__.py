"""The demo: a small web app to deploy (``python -m warren.demo.app``) and the ``warren demo``
scenario. The app imports nothing of Warren's and starts in milliseconds."""
