"""FHIR's read side: the stored patients as FR Core resources, read through an engine, for
whoever serves them (http/fhir's /fhir, the daemon's webhooks with include_resource).

store/fhirquery reads the versions, fhir/patient maps one (pure); this room joins the two,
since the store may not import fhir/ and the change feed does not map (it is given a
callable). It sits beside feed/ in the layers: above store/ and fhir/, below http/ and
service/, and neither it nor feed/ imports the other."""
