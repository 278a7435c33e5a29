"""
The web interface: users log in and click to call. It talks to the call controller and the
stores only through their interfaces (:mod:`clicktodial.interfaces`).
"""
