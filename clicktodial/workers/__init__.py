"""
Worker processes (``[daemon] workers = N | auto``, issue 16): the main process binds the SIP
sockets, runs the web interface and supervises N workers that run the SIP stack and the
calls (:mod:`.main`, :mod:`.supervisor`, :mod:`.sockets`); they meet on a local bus over
the workers' pipes (:mod:`.bus`); a worker's side is :mod:`.node` and
:mod:`clicktodial.worker`. See docs/deploy.md, "Worker processes".
"""
