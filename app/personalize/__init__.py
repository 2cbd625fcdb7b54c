"""Sitecore Personalize's side of a connection: the connection definitions ``enrich personalize
connection`` prints, and the stand-in that ``enrich personalize test`` runs (it calls the
service the way a Personalize connection does). Nothing here runs inside the service."""
